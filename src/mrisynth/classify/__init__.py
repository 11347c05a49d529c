"""Classifiers: models through a registry, a device-resident training engine, metrics.

    from mrisynth.classify import ClassifierConfig, TrainData, fit, load_classifier
"""

from mrisynth.classify.checkpoint import load_classifier
from mrisynth.classify.config import AugmentConfig, ClassifierConfig
from mrisynth.classify.data import TrainData
from mrisynth.classify.metrics import classification_metrics
from mrisynth.classify.models import MODELS, build_classifier
from mrisynth.classify.train import evaluate, fit, train_one_epoch

__all__ = [
    "AugmentConfig", "ClassifierConfig", "MODELS", "TrainData", "build_classifier",
    "classification_metrics", "evaluate", "fit", "load_classifier", "train_one_epoch",
]
