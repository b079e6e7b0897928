"""Scoring functions, free of Lightning: NLG (pycocoevalcap definitions), clinical efficacy, VQA, FID."""
