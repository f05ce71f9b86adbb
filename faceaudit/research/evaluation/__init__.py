"""Evaluate the face pipeline on a labelled dataset, all from one extraction of every image.

The dataset has one folder per identity (LFW layout, ``Name/Name_0001.jpg``). Each image's
label is about one face; following LFW, that is the face nearest the image centre (the
"labelled" face). ``dataset``: loading the dataset and extracting its faces; then one module
per measure: ``verification`` (1:1), ``self_search`` (1:N), ``impostors`` (the false-match
rate calibration is fitted from), ``cluster_quality`` (identity clustering); ``protocol``
runs them all and records the run.
"""
