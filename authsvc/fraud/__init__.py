"""Fraud assessment beside the authentication decision: replay, synthetic speech, known fraudsters."""
