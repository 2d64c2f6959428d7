"""INT8 calibration on normal images and the quantisation report."""
