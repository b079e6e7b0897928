"""The labeler's vocabulary: mention phrases per CheXpert label, triggers, qualifiers, exclusions.

Everything here is plain lower-case literal phrases (no regexes) so that the lists read as a
radiology glossary and can be extended without knowing the matcher. `rules.py` compiles them
into one alternation per vocabulary (longest phrase first), matched on word boundaries.

Conventions (documented for users in docs/labeler.md):
- A phrase counts for every label it is listed under; the longest phrase wins at a position,
  so a longer phrase must be listed under each label it implies ("nodular opacity" under Lung
  Lesion and Lung Opacity; "kerley b lines" under Edema only, not as a "line").
- `NON_MENTIONS` are phrases that contain a mention word but are not that finding
  ("pericardial effusion", "pleural line", "lytic lesion"); they block the shorter mention.
- `ANATOMY` phrases ("heart size", "cardiomediastinal silhouette") are mentions only together
  with a `QUALIFIERS` word in the same clause ("heart size is normal" -> negated Cardiomegaly).
"""

from __future__ import annotations

from lit_medxchat.constants import CHEXPERT_LABELS

# Label-less vocabulary entries use this pseudo-label; they feed the "No Finding" rule only.
NO_FINDING_EXCLUSION = "__no_finding_exclusion__"

MENTIONS: dict[str, tuple[str, ...]] = {
    "Atelectasis": (
        "atelectasis", "atelectases", "atelectatic", "atelectatic changes", "volume loss", "collapse",
        "collapsed lobe", "lobar collapse", "subsegmental atelectasis", "plate-like atelectasis",
        "platelike atelectasis", "discoid atelectasis", "linear atelectasis",
    ),
    "Cardiomegaly": (
        "cardiomegaly", "enlarged heart", "enlarged cardiac silhouette", "cardiac enlargement",
        "enlargement of the heart", "enlargement of the cardiac silhouette", "heart size is enlarged",
        "enlarged heart size", "enlarged cardiac contour", "enlarged cardiac contours",
    ),
    "Consolidation": (
        "consolidation", "consolidations", "consolidative", "consolidated", "airspace opacity",
        "airspace opacities", "air space opacity", "air space opacities", "airspace consolidation",
    ),
    "Edema": (
        "edema", "oedema", "vascular congestion", "pulmonary congestion", "interstitial markings",
        "vascular engorgement", "pulmonary vascular engorgement", "fluid overload", "cephalization",
        "perihilar haziness", "perihilar opacities", "perihilar opacity",
        "kerley b lines", "kerley lines", "chf", "congestive heart failure", "heart failure", "vascular redistribution",
        "interstitial edema", "alveolar edema", "pulmonary edema",
    ),
    "Enlarged Cardiomediastinum": (
        "enlarged cardiomediastinum", "widened mediastinum", "mediastinal widening", "widening of the mediastinum",
        "mediastinal enlargement", "enlarged mediastinum", "enlarged cardiomediastinal silhouette",
        "widened cardiomediastinal silhouette", "enlargement of the cardiomediastinal silhouette",
    ),
    "Fracture": (
        "fracture", "fractures", "fractured", "fx",
    ),
    "Lung Lesion": (
        "nodule", "nodules", "nodular opacity", "nodular opacities", "nodular density", "nodular densities",
        "mass", "masses", "lesion", "lesions", "tumor", "tumour", "neoplasm", "carcinoma", "metastasis",
        "metastases", "metastatic disease", "pulmonary nodule", "lung nodule", "lung mass", "pulmonary mass",
        "cavitary lesion",
    ),
    "Lung Opacity": (
        "opacity", "opacities", "opacification", "opacifications", "infiltrate", "infiltrates", "infiltration",
        "density", "densities", "haziness", "hazy opacity", "airspace disease", "air space disease",
        "ground-glass", "ground glass", "ground-glass opacity", "ground glass opacity",
        "airspace opacity", "airspace opacities", "air space opacity", "air space opacities",
        "nodular opacity", "nodular opacities", "nodular density", "nodular densities",
    ),
    "Pleural Effusion": (
        "effusion", "effusions", "pleural effusion", "pleural effusions", "pleural fluid", "hydrothorax",
        "blunting of the costophrenic angle", "blunting of the costophrenic angles",
        "blunting of the right costophrenic angle", "blunting of the left costophrenic angle",
        "blunting of both costophrenic angles", "blunted costophrenic angle", "blunted costophrenic angles",
        "costophrenic angle blunting", "hydropneumothorax", "fluid layering",
    ),
    "Pleural Other": (
        "pleural thickening", "pleural plaque", "pleural plaques", "pleural calcification",
        "pleural calcifications", "pleural scarring", "pleural scar", "fibrothorax", "pleural fibrosis",
        "pleural-parenchymal scarring", "pleuroparenchymal scarring", "apical cap", "apical pleural thickening",
    ),
    "Pneumonia": (
        "pneumonia", "pneumonias", "bronchopneumonia", "infection", "infections", "infectious process",
        "infectious", "pneumonitis",
    ),
    "Pneumothorax": (
        "pneumothorax", "pneumothoraces", "ptx", "hydropneumothorax",
    ),
    "Support Devices": (
        "tube", "tubes", "line", "lines", "catheter", "catheters", "pacemaker", "pacemakers", "pacer",
        "pacing wire", "pacing wires", "pacing lead", "pacing leads", "pacemaker leads", "defibrillator",
        "icd", "aicd", "stent", "stents", "port", "port-a-cath", "portacath", "drain", "drains",
        "swan-ganz", "swan ganz", "dobhoff", "picc", "endotracheal tube", "et tube", "ng tube",
        "nasogastric tube", "og tube", "orogastric tube", "feeding tube", "enteric tube", "chest tube",
        "tracheostomy tube", "central venous catheter", "central line", "picc line", "ij line",
        "valve replacement", "prosthetic valve", "intra-aortic balloon pump", "iabp", "lvad",
        "electrode", "electrodes", "monitoring leads", "gastrostomy tube", "support device", "support devices",
        "monitoring device", "monitoring devices", "lines and tubes", "tubes and lines",
    ),
}

# Signs of a finding rather than its name: they count only when the sentence does not name the
# finding itself, whose state then decides ("blunting ... may reflect a small effusion" -> -1).
SIGNS: tuple[str, ...] = (
    "blunting of the costophrenic angle", "blunting of the costophrenic angles",
    "blunting of the right costophrenic angle", "blunting of the left costophrenic angle",
    "blunting of both costophrenic angles", "blunted costophrenic angle", "blunted costophrenic angles",
    "costophrenic angle blunting", "fluid layering", "volume loss", "perihilar haziness", "perihilar opacities",
    "perihilar opacity", "cephalization", "vascular redistribution",
)

# Phrases that contain a mention word but are not that finding; they map to no label.
NON_MENTIONS: tuple[str, ...] = (
    "pericardial effusion", "pericardial effusions", "joint effusion",
    "pleural line", "visceral pleural line", "septal lines", "skin fold line", "skin line",
    "paraspinal line", "paratracheal line", "junction line", "azygoesophageal line", "fissural line",
    "line of", "in line with", "tube feeding",
    "lytic lesion", "lytic lesions", "osseous lesion", "osseous lesions", "sclerotic lesion",
    "sclerotic lesions", "blastic lesion", "bone lesion", "bone lesions", "skin lesion", "skin lesions",
    "mass effect", "body mass", "soft tissue edema", "subcutaneous edema", "chest wall edema",
    "bone density", "bone densities", "vertebral body collapse", "compression collapse",
)

# Anatomy that becomes a mention only with a qualifier in the same clause.
ANATOMY: dict[str, tuple[str, ...]] = {
    "Cardiomegaly": (
        "heart", "heart size", "cardiac size", "cardiac silhouette", "cardiac contour", "cardiac contours",
        "cardiac shadow", "size of the heart", "size of the cardiac silhouette", "cardiac silhouettes",
        # Heart and mediastinum together describe both labels ("... are normal" negates both).
        "cardiac and mediastinal silhouettes", "cardiac and mediastinal contours", "heart and mediastinum",
        "cardiac and mediastinal silhouette", "heart and mediastinal contours",
    ),
    "Enlarged Cardiomediastinum": (
        "cardiomediastinal silhouette", "cardiomediastinal contour", "cardiomediastinal contours",
        "mediastinal silhouette", "mediastinal contour", "mediastinal contours", "mediastinum",
        "cardiomediastinal silhouettes", "mediastinal and hilar contours", "hilar and mediastinal contours",
        "cardiomediastinal and hilar contours", "cardiac and mediastinal silhouettes",
        "cardiac and mediastinal contours", "heart and mediastinum", "cardiac and mediastinal silhouette",
        "heart and mediastinal contours",
    ),
}

# Qualifier polarity for ANATOMY phrases. "weak" qualifiers (stable, unchanged) count only when no
# other qualifier is in the clause: "normal and stable" -> negated, "stable" alone -> uncertain
# (without the prior film one cannot tell whether a stable silhouette is enlarged).
QUALIFIERS_POSITIVE: tuple[str, ...] = (
    "enlarged", "enlargement", "increased", "large", "widened", "widening", "mildly enlarged",
    "moderately enlarged", "severely enlarged", "markedly enlarged", "massively enlarged", "dilated",
)
QUALIFIERS_NEGATIVE: tuple[str, ...] = (
    "normal", "within normal limits", "unremarkable", "not enlarged", "not widened", "normal in size",
    "normal size", "no longer enlarged", "no longer widened",
)
QUALIFIERS_UNCERTAIN: tuple[str, ...] = (
    "borderline", "borderline enlarged", "top normal", "top-normal", "upper limits of normal",
    "upper limit of normal", "upper normal", "high normal", "high-normal", "prominent", "mildly prominent",
    "at the upper limits of normal", "possibly enlarged", "may be enlarged",
)
QUALIFIERS_WEAK_UNCERTAIN: tuple[str, ...] = (
    "stable", "unchanged", "similar", "grossly stable",
)

# Negation before the mention; scope runs forward to the end of the clause.
PRE_NEGATION: tuple[str, ...] = (
    "no", "not", "without", "free of", "clear of", "negative for", "absence of",
    "no evidence of", "no signs of", "no sign of", "no findings of", "no definite", "no convincing",
    "resolution of", "interval removal of", "removal of", "nor", "neither",
)
# Negation on both sides ("resolved pneumonia", "pneumonia has resolved" is in POST_NEGATION).
BOTH_NEGATION: tuple[str, ...] = ("resolved", "absent")
# Negation after the mention; scope runs backward to the start of the clause.
POST_NEGATION: tuple[str, ...] = (
    "is not seen", "are not seen", "not seen", "is not identified", "are not identified", "not identified",
    "is not present", "are not present", "not present", "is not visualized", "are not visualized",
    "not visualized", "not appreciated", "is not appreciated", "are not appreciated", "not evident",
    "not demonstrated", "not detected", "not noted", "is absent", "are absent", "has resolved",
    "have resolved", "has cleared", "have cleared", "has been removed", "have been removed",
    "removed", "is no longer seen", "are no longer seen", "no longer seen", "no longer present",
    "no longer visualized", "no longer evident", "is no longer present", "are no longer present",
    "has been withdrawn", "have been withdrawn", "removal", "was removed", "were removed",
)
# Uncertainty that wins over negation (CheXpert's "pre-negation uncertainty"): these phrases
# contain a negation word but assert that the finding is possible.
STRONG_UNCERTAINTY: tuple[str, ...] = (
    "cannot exclude", "can not exclude", "cannot be excluded", "can not be excluded", "could not be excluded",
    "cannot be entirely excluded", "not excluded", "not entirely excluded", "cannot rule out",
    "can not rule out", "cannot be ruled out", "can not be ruled out", "not ruled out", "not be ruled out",
    "not be excluded", "difficult to exclude", "difficult to rule out", "rule out", "to rule out",
    "r/o", "to exclude", "evaluate for", "assess for", "not clearly excluded", "cannot be completely excluded",
    "no definite evidence against",
)
# Uncertainty before the mention.
PRE_UNCERTAINTY: tuple[str, ...] = (
    "possible", "possibly", "probable", "probably", "likely", "likely represents", "likely reflects",
    "may", "may represent", "may reflect", "may be", "might", "might represent", "could", "could be",
    "could represent", "could reflect", "questionable", "question of", "suspected",
    "suspect", "concern for", "suggests",
    "suggest", "differential diagnosis includes", "differential includes", "presumed", "presumably",
    "equivocal", "indeterminate", "uncertain", "unclear", "possibility of", "potential", "potentially",
    "borderline", "raising the possibility of", "cannot be distinguished from",
)
# Hedges that also work after the mention when they end the clause ("atelectasis, likely.").
CLAUSE_FINAL_UNCERTAINTY: tuple[str, ...] = ("likely", "probably", "possibly", "presumably", "suspected", "possible")
# Hedges that link two findings: uncertain on their own ("opacity concerning for pneumonia"),
# negated when the finding they hang on is negated ("no consolidation to suggest pneumonia").
LINKING_UNCERTAINTY: tuple[str, ...] = (
    "to suggest", "suggesting", "suggestive of", "to indicate", "concerning for", "worrisome for",
    "suspicious for", "to suggest the presence of",
)
# Uncertainty after the mention.
POST_UNCERTAINTY: tuple[str, ...] = (
    "is possible", "are possible", "is likely", "are likely", "is suspected", "are suspected",
    "is questionable", "are questionable", "is questioned", "are questioned", "questioned",
    "is not clearly seen", "may be present", "may be seen",
    "is not excluded", "could be present", "is a possibility", "is considered", "is favored",
    "are not well seen", "is not well seen",
)
# Uncertainty on both sides of the trigger ("atelectasis versus pneumonia").
BOTH_UNCERTAINTY: tuple[str, ...] = ("versus", "vs", "vs.", "and/or")

# Phrases that start like a negation but do not negate what follows ("no change in the effusion").
PSEUDO_NEGATION: tuple[str, ...] = (
    "no change", "no interval change", "no significant change", "no significant interval change",
    "no appreciable change", "no substantial change", "no increase", "no decrease", "no worsening",
    "no improvement", "no significant improvement", "without change", "without interval change",
    "without significant change", "not significantly changed", "not changed", "no further change",
    "not only", "gram negative",
)

# Statements of presence: they end the scope of a negation ("no effusion, there is consolidation").
PRESENCE: tuple[str, ...] = (
    "there is", "there are", "there has been", "is seen", "are seen", "is present", "are present",
    "is noted", "are noted", "is again seen", "are again seen", "is identified", "are identified",
    "is demonstrated", "persists", "persist", "remains", "remain", "is visualized", "is evident",
    "has developed", "has increased", "however", "but", "although", "though",
    "aside from", "apart from", "except", "with the exception of", "otherwise", "whereas", "while",
)

# Phrases that make a report not "No Finding" although they are none of the 13 findings:
# chronic or incidental abnormalities. Matched with the same negation rules ("no emphysema"
# does not exclude No Finding). Prefix-free literal phrases, like all vocabulary here.
NO_FINDING_EXCLUSIONS: tuple[str, ...] = (
    "emphysema", "emphysematous", "hyperinflation", "hyperinflated", "hyperexpansion", "hyperexpanded",
    "copd", "chronic obstructive", "granuloma", "granulomas", "granulomatous", "calcification",
    "calcifications", "calcified", "scoliosis", "kyphosis", "fibrosis", "fibrotic", "scarring", "scar",
    "bronchiectasis", "hernia", "prominence", "prominent", "degenerative", "degenerative changes",
    "osteopenia", "osteophytes", "tortuous", "tortuosity", "elevated hemidiaphragm", "elevation of the",
    "eventration", "bulla", "bullae", "bullous", "cyst", "cysts", "interstitial lung disease",
    "interstitial abnormality", "reticular", "reticulation", "thickening", "aspiration",
    "pneumomediastinum", "pneumoperitoneum", "free air", "atherosclerosis", "atherosclerotic",
    "aortic knob calcification", "hilar enlargement", "lymphadenopathy", "adenopathy", "hematoma",
    "hemorrhage", "contusion", "deformity", "asthma", "bronchitis", "airway disease", "airways disease",
    "peribronchial cuffing", "bronchial wall thickening", "hypertension", "sternotomy", "sternotomy wires",
    "surgical clips", "post-surgical", "postsurgical", "postoperative", "thoracotomy", "lobectomy",
    "pneumonectomy", "resection", "arthritis", "arthropathy",
)


def _check() -> None:
    """Fail at import if a label key is misspelt: a typo would silently drop a label."""
    unknown = (set(MENTIONS) | set(ANATOMY)) - set(CHEXPERT_LABELS)
    if unknown:
        raise ValueError(f"labeler lexicon: unknown CheXpert labels {sorted(unknown)}; see constants.CHEXPERT_LABELS")


_check()
