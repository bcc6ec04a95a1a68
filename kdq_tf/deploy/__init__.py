"""Deployment: Keras -> .tflite bytes (`convert`), the device flatbuffer (`flatbuf`), LUT
compression (`compression`) and the export stage (`export`)."""
