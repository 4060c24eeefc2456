"""Encoder pipelines: dataset loading, embedding, evaluation, XBT and the encoder report."""
