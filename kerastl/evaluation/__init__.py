"""After training: how good the model is, where it fails, and whether its probabilities hold.

`interpret` measures a classifier on labelled data (per-class figures, the confusion
matrix, the most confused pairs, the top losses, calibration); `grad_cam` shows where
the model looks; `calibrate` fits a temperature on held-out data and puts it into the
model; `write_report` turns it all into one HTML page and a JSON file.
"""

from kerastl.evaluation.calibration import Calibration, calibrate
from kerastl.evaluation.gradcam import grad_cam
from kerastl.evaluation.interpretation import Interpretation, interpret
from kerastl.evaluation.report import write_report
from kerastl.evaluation.tta import TTA_MODES

__all__ = [
    "TTA_MODES",
    "Calibration",
    "Interpretation",
    "calibrate",
    "grad_cam",
    "interpret",
    "write_report",
]
