"""The researcher's room: evaluation and calibration of a model pack, clustering, the exposure
report and cohort search. Reads indexes; never builds or serves them."""
