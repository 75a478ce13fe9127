"""Audio input: decoding, resampling, voice activity and quality checks."""
