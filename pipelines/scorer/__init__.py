"""The alignment scorer pipeline: encoders, misalignment scoring, calibration, package, report."""
