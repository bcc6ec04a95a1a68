"""The teacher side: the training recipe, fusion of several teachers, logits files, the teacher
stage."""
