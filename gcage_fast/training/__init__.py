"""Training of base detectors and G-CAGE heads (``gcage-fast train-base`` / ``train-head``)."""
