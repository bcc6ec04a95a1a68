"""The device side: C arrays, the TFLite-Micro firmware project and its template (package data),
the TFLM tree, build, run and the device report, and the TFLM Python interpreter (`micro`)."""
