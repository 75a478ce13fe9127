"""Speaker encoders (GE2E, ECAPA): see `encoder.SpeakerEncoder` and `registry.load_encoder`."""
