"""Small shipped text samples (en.txt, zh.txt) for the OCR renderer; a package so installs carry them."""
