"""The method's core, shared by ``training`` and ``service``.

- ``formulas``: CAM, influence, top units, coverage, thresholding and IoU (NumPy).
- ``fcn``: the ResNet classifier and its fully convolutional form (torch).
- ``grid``: how a layer4 grid cell maps onto the uploaded image's pixels.
- ``imaging``: decoding and preprocessing, identical in training and serving.
- ``bundle``: the model bundle format, written by training, verified by the service.
"""

__version__ = "0.1.0"
