"""The main job: the whole MedXChat loop on the built-in dataset, with a run report."""
