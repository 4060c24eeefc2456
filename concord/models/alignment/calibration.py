"""Calibrated P(aligned): a logistic map of the pair scores, fitted offline (pure numpy, no I/O)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from concord.models.alignment.scores import PairScores

CALIBRATION_FEATURES = ("clip_score", "fine_grained_score", "f_clip_score")


def aligned_probability(scores: PairScores, calibration: Mapping[str, Any]) -> float:
    """Calibrated P(aligned) from the calibration dict stored in scorer.json.

    Form (`"form": "logistic"`): sigmoid(intercept + sum_k coef_k * (x_k - mean_k) / scale_k)
    over `features` (names of PairScores fields, by default clip_score, fine_grained_score,
    f_clip_score), fitted on a held-out split by pipelines.scorer. Keys: form, features, mean,
    scale, coef, intercept.
    """
    if calibration.get("form") != "logistic":
        raise ValueError(f"unknown calibration form {calibration.get('form')!r}")
    features = list(calibration.get("features", CALIBRATION_FEATURES))
    mean = np.asarray(calibration["mean"], dtype=np.float64)
    scale = np.asarray(calibration["scale"], dtype=np.float64)
    coef = np.asarray(calibration["coef"], dtype=np.float64)
    if not len(features) == len(mean) == len(scale) == len(coef):
        raise ValueError("calibration features, mean, scale and coef differ in length")
    x = np.asarray([float(getattr(scores, f)) for f in features], dtype=np.float64)
    z = float(calibration["intercept"]) + float(coef @ ((x - mean) / np.where(scale > 0, scale, 1)))
    return float(1.0 / (1.0 + math.exp(-z))) if z >= 0 else float(math.exp(z) / (1.0 + math.exp(z)))
