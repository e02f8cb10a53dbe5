"""The files a trained model version consists of, under its artifact prefix in the bucket,
and how many images one Predict request may send it (the scheduler and the trainer both refuse more)."""

MAX_PREDICT_IMAGES = 64

ARTIFACTS = (
    "checkpoint.pt",  # best weights + classes, resolution, normalisation (torch.load)
    "model.torchscript.pt",  # runs with plain torch.jit.load: uint8 NCHW in, probabilities out
    "preprocessing.json",  # input resolution and normalisation of the export
    "labels.json",  # class names in output order
    "metrics.json",  # the full evaluation (S9), per-epoch history, parameters
    "confusion_matrix.png",
    "curves.png",
)
