"""OCR extraction: one engine interface (``engine``), RapidOCR (``rapid``, the offline default)
and PaddleOCR 3.x (``paddle``, offline models prepared by ``paddle_models``), reading order
(``reading``), and the Spark step that turns text-dense images into OCR rows (``step``)."""
