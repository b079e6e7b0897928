"""The built-in dataset: CXRs rendered from a chest CT, written in the MIMIC-CXR-JPG layout."""
