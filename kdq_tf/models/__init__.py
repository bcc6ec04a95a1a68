"""Teacher and student model builders."""
