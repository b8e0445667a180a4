"""SARCLIP: the open_clip registry and checkpoints (torch), the ONNX query encoders, L2 normalization.

Importing this package imports no torch: the torch code lives in `sarclip_search.model.sarclip`."""
