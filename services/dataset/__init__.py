"""The dataset service: images, labels, trainability checks (S1) and published versions (S2, S3).

The modules here are pure domain code (no gRPC, storage or SQL):

- ``rules``: the user-facing rules: training ratio, S1 trainability, label and version names.
- ``split``: the seeded, stratified, stable TRAIN/EVAL split of a version.
- ``images``: validation of uploaded images by decoding them.
- ``manifest``: the published version's manifest (ExeML/ModelArts JSON Lines) and metadata.
"""
