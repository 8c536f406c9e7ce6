"""The numpy array types of the A/B analysis: one element per prediction, or per look."""

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]
