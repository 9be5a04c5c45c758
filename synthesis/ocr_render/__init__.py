"""OCR data synthesis by rendering: corpora, fonts with glyph-coverage checks, layouts (line,
paragraph, page, scene, table), effects, and ground-truth rows in the sample contract.

Modules, one idea each: ``corpus`` (text), ``fonts`` (discovery, coverage), ``canvas`` (drawing
primitives), ``layouts/`` (one file per layout), ``effects`` (geometry and photometry),
``sample`` (one sample from (seed, index)), ``phrasings`` and ``truth`` (rows), ``step`` and
``source`` (Spark).
"""
