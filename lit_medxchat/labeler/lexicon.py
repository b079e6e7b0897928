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

from lit_medxchat.core.constants import CHEXPERT_LABELS

# Label-less vocabulary entries use this pseudo-label; they feed the "No Finding" rule only.
NO_FINDING_EXCLUSION = "__no_finding_exclusion__"

# Mention phrases per label. Sources: the CheXpert labeler's mention lists (see docs/labeler.md),
# spelled out as whole words (its lists match prefixes such as "atelecta", "consolidat", "opaci"),
# plus the radiologists' wording of MIMIC-CXR and IU X-ray reports that those prefixes cover.
MENTIONS: dict[str, tuple[str, ...]] = {
    "Atelectasis": (
        "atelectasis", "atelectases", "atelectatic", "collapse", "collapsed", "atelectatic changes",
        "atelectatic change",
    ),
    "Cardiomegaly": (
        "cardiomegaly", "enlarged heart", "enlarged cardiac silhouette", "cardiac enlargement",
        "enlargement of the heart", "enlargement of the cardiac silhouette", "enlarged heart size",
        "enlarged cardiac contour", "enlarged cardiac contours", "enlarged cardiac shadow", "cardiomegally",
    ),
    "Consolidation": (
        "consolidation", "consolidations", "consolidative", "consolidated", "consolidating",
        "airspace consolidation", "air space consolidation", "air-space consolidation",
    ),
    "Edema": (
        "edema", "oedema", "pulmonary edema", "interstitial edema", "alveolar edema", "fluid overload",
        "heart failure", "chf", "congestive heart failure", "kerley b lines", "kerley lines", "kerley b-lines",
        "vascular congestion", "pulmonary vascular congestion", "pulmonary congestion", "pulmonary venous congestion",
        "venous congestion", "indistinctness", "vascular indistinctness", "vascular prominence",
        "vascular engorgement", "pulmonary vascular engorgement", "perihilar haziness",
    ),
    "Enlarged Cardiomediastinum": (
        "enlarged cardiomediastinum", "widened mediastinum", "mediastinal widening", "widening of the mediastinum",
        "mediastinal enlargement", "enlarged mediastinum", "enlarged cardiomediastinal silhouette",
        "widened cardiomediastinal silhouette", "enlargement of the cardiomediastinal silhouette",
        "widened superior mediastinum", "enlarged mediastinal silhouette", "widened mediastinal silhouette",
    ),
    "Fracture": (
        "fracture", "fractures", "fractured", "fx", "fracture deformity", "fracture deformities",
    ),
    "Lung Lesion": (
        "nodule", "nodules", "nodular opacity", "nodular opacities", "nodular density", "nodular densities",
        "nodular opacification", "nodular lesion", "mass", "masses", "lump", "cavitary lesion", "cavitary lesions",
        "carcinoma", "neoplasm", "tumor", "tumour", "malignancy", "lung lesion", "lung lesions", "pulmonary lesion",
        "pulmonary lesions", "pulmonary nodule", "pulmonary nodules", "lung nodule", "lung nodules", "lung mass",
        "pulmonary mass", "pulmonary metastases", "pulmonary metastasis", "lung metastases", "micronodules",
        "micronodular",
    ),
    "Lung Opacity": (
        "opacity", "opacities", "opacification", "opacifications", "opacified", "opacifying", "opaque",
        "infiltrate", "infiltrates", "infiltration", "infiltrative", "increased density", "increased densities",
        "decreased translucency", "airspace disease", "air space disease", "air-space disease", "haziness",
        "hazy opacity", "ground-glass", "ground glass", "airspace process", "air space process",
        "interstitial marking", "interstitial markings", "interstitial pattern", "interstitial lung markings",
        "reticular pattern", "reticular marking", "reticular markings", "reticular opacities", "reticulation",
        "reticulonodular", "parenchymal scarring", "peribronchial thickening", "bronchial wall thickening",
        "scar", "scarring", "scars", "nodular opacity", "nodular opacities", "nodular opacification",
    ),
    "Pleural Effusion": (
        "effusion", "effusions", "pleural effusion", "pleural effusions", "pleural fluid", "hydrothorax",
        "hydropneumothorax", "pleural fluid collection",
    ),
    "Pleural Other": (
        "pleural thickening", "pleural plaque", "pleural plaques", "pleural calcification",
        "pleural calcifications", "pleural scarring", "pleural scar", "fibrothorax", "pleural fibrosis",
        "pleural-parenchymal scarring", "pleuroparenchymal scarring", "pleural parenchymal scarring",
        "pleuro-parenchymal scarring", "pleural parenchymal scar", "pleuro-parenchymal scar",
        "pleuroparenchymal scar", "pleuro-pericardial scar", "apical cap", "apical caps",
        "apical pleural thickening", "pleural thickenings", "calcified pleural plaques", "calcified pleural plaque",
    ),
    "Pneumonia": (
        "pneumonia", "pneumonias", "bronchopneumonia", "infection", "infections", "infectious process",
        "infectious", "pneumonitis", "infectious processes",
    ),
    "Pneumothorax": (
        "pneumothorax", "pneumothoraces", "ptx", "hydropneumothorax",
    ),
    "Support Devices": (
        "tube", "tubes", "line", "lines", "catheter", "catheters", "pacemaker", "pacemakers", "pacer",
        "pacing wire", "pacing wires", "pacing lead", "pacing leads", "pacemaker leads", "defibrillator",
        "icd", "aicd", "stent", "stents", "port", "port-a-cath", "portacath", "mediport", "drain", "drains",
        "swan-ganz", "swan ganz", "dobhoff", "picc", "endotracheal tube", "et tube", "ng tube",
        "nasogastric tube", "og tube", "orogastric tube", "feeding tube", "enteric tube", "chest tube",
        "tracheostomy tube", "central venous catheter", "central line", "picc line", "ij line",
        "valve replacement", "prosthetic valve", "prosthetic valves", "mechanical valve", "valve prosthesis",
        "intra-aortic balloon pump", "iabp", "lvad",
        "electrode", "electrodes", "monitoring leads", "gastrostomy tube", "support device", "support devices",
        "monitoring device", "monitoring devices", "lines and tubes", "tubes and lines", "device", "devices",
        "hardware", "cannula", "coil", "coils", "arthroplasty", "loop recorder",
    ),
}

# Mentions that CheXpert reads as uncertain even when stated: signs that suggest a finding without
# establishing it ("pulmonary vascular congestion" -> Edema -1). A negation still negates them.
UNCERTAIN_MENTIONS: tuple[str, ...] = (
    "vascular congestion", "pulmonary vascular congestion", "pulmonary congestion", "pulmonary venous congestion",
    "venous congestion", "indistinctness", "vascular indistinctness", "vascular prominence",
    "vascular engorgement", "pulmonary vascular engorgement",
)

# Mentions that also imply another label (CheXpert: heart failure -> Cardiomegaly uncertain) unless negated.
IMPLIES: dict[str, tuple[str, float]] = {
    "chf": ("Cardiomegaly", -1.0),
    "heart failure": ("Cardiomegaly", -1.0),
    "congestive heart failure": ("Cardiomegaly", -1.0),
}

# Signs of a finding rather than its name: they count only when the sentence does not name the
# finding itself, whose state then decides ("perihilar haziness may reflect mild edema" -> -1).
SIGNS: tuple[str, ...] = ("perihilar haziness",)

# Phrases that contain a mention word but are not that finding; they map to no label (CheXpert's
# "unmention" lists, and its positional phrases: "over the heart" is no statement about heart size).
NON_MENTIONS: tuple[str, ...] = (
    "pericardial effusion", "pericardial effusions", "joint effusion",
    "pleural line", "visceral pleural line", "septal lines", "skin fold line", "skin line",
    "paraspinal line", "paratracheal line", "junction line", "azygoesophageal line", "fissural line",
    "line of", "in line with", "tube feeding", "tubular",
    "lytic lesion", "lytic lesions", "osseous lesion", "osseous lesions", "sclerotic lesion",
    "sclerotic lesions", "blastic lesion", "bone lesion", "bone lesions", "skin lesion", "skin lesions",
    "mass effect", "body mass", "soft tissue edema", "subcutaneous edema", "chest wall edema",
    "breast mass", "bone density", "bone densities", "vertebral body collapse",
    "compression collapse", "nipple shadow", "nipple shadows", "massengale",
    "over the heart", "overlying the heart", "behind the heart", "through the heart", "projecting over the heart",
    "over the cardiac silhouette", "overlying the cardiac silhouette", "behind the cardiac silhouette",
    "over the mediastinum", "overlying the mediastinum", "in the mediastinum",
    "heart border", "heart borders", "cardiac border", "cardiac borders",
)

# Anatomy that becomes a mention only with a qualifier in the same clause.
ANATOMY: dict[str, tuple[str, ...]] = {
    "Cardiomegaly": (
        "heart", "heart size", "cardiac size", "cardiac silhouette", "cardiac contour", "cardiac contours",
        "cardiac shadow", "size of the heart", "size of the cardiac silhouette", "cardiac silhouettes",
        "heart shadow", "cardiac configuration",
        # Heart and mediastinum together describe both labels ("... are normal" negates both).
        "cardiac and mediastinal silhouettes", "cardiac and mediastinal contours", "heart and mediastinum",
        "cardiac and mediastinal silhouette", "heart and mediastinal contours", "heart and mediastinal silhouette",
        "cardiac and mediastinal contour", "heart and mediastinal silhouettes",
    ),
    "Enlarged Cardiomediastinum": (
        "cardiomediastinal silhouette", "cardiomediastinal contour", "cardiomediastinal contours",
        "mediastinal silhouette", "mediastinal contour", "mediastinal contours", "mediastinum",
        "cardiomediastinal silhouettes", "mediastinal and hilar contours", "hilar and mediastinal contours",
        "cardiomediastinal and hilar contours", "cardiomediastinum", "mediastinal configuration",
        "pericardial silhouette", "cardiomediastinal configuration", "cardiomediastinal shadow",
        "cardiac and mediastinal silhouettes", "cardiac and mediastinal contours", "heart and mediastinum",
        "cardiac and mediastinal silhouette", "heart and mediastinal contours", "heart and mediastinal silhouette",
        "cardiac and mediastinal contour", "heart and mediastinal silhouettes",
    ),
}

# Qualifier polarity for ANATOMY phrases. "weak" qualifiers (stable, unchanged) count only when no
# other qualifier is in the clause: "normal and stable" -> negated, "stable" alone -> uncertain
# (without the prior film one cannot tell whether a stable silhouette is enlarged; CheXpert's rule).
QUALIFIERS_POSITIVE: tuple[str, ...] = (
    "enlarged", "enlargement", "increased", "large", "widened", "widening", "mildly enlarged",
    "moderately enlarged", "severely enlarged", "markedly enlarged", "massively enlarged", "dilated",
    "increased in size", "globular",
)
QUALIFIERS_NEGATIVE: tuple[str, ...] = (
    "normal", "within normal limits", "unremarkable", "not enlarged", "not widened", "normal in size",
    "normal size", "no longer enlarged", "no longer widened", "normal-sized", "normal sized", "wnl",
    "within normal range", "not significantly enlarged", "not increased",
)
QUALIFIERS_UNCERTAIN: tuple[str, ...] = (
    "borderline", "borderline enlarged", "top normal", "top-normal", "upper limits of normal",
    "upper limit of normal", "upper normal", "high normal", "high-normal", "prominent", "mildly prominent",
    "at the upper limits of normal", "possibly enlarged", "may be enlarged", "upper limits normal",
    "upper range of normal", "upper-normal", "top-normal in size", "top normal in size", "difficult to assess",
    "obscured",
)
QUALIFIERS_WEAK_UNCERTAIN: tuple[str, ...] = (
    "stable", "unchanged", "similar", "grossly stable", "not changed", "no change",
)

# --- Triggers (the NegBio-style patterns of the CheXpert labeler, as phrases; see docs/labeler.md).
# Negation before the mention; scope runs forward in the clause and along a coordinated list.
PRE_NEGATION: tuple[str, ...] = (
    "no", "not", "without", "free of", "clear of", "negative for", "absence of",
    "no evidence of", "no signs of", "no sign of", "no findings of", "no definite", "no convincing",
    "no typical findings of", "no radiographic evidence of", "no findings to suggest", "no visible", "no obvious",
    "resolution of", "interval resolution of", "interval removal of", "removal of", "disappearance of",
    "nor", "neither", "rather than", "no longer", "without evidence of", "without radiographic evidence of",
    "clearing of", "no residual",
)
# Negation on both sides ("resolved pneumonia", "pneumonia resolved").
BOTH_NEGATION: tuple[str, ...] = ("resolved", "cleared", "absent", "negative")
# Negation after the mention; scope runs backward to the start of the clause.
POST_NEGATION: tuple[str, ...] = (
    "is not seen", "are not seen", "not seen", "is not identified", "are not identified", "not identified",
    "is not present", "are not present", "not present", "is not visualized", "are not visualized",
    "not visualized", "not appreciated", "is not appreciated", "are not appreciated", "not evident",
    "is not evident", "are not evident", "not demonstrated", "not detected", "not noted", "is absent",
    "are absent", "has resolved", "have resolved", "has cleared", "have cleared", "has been removed",
    "have been removed", "removed", "is no longer seen", "are no longer seen", "no longer seen",
    "no longer present", "no longer visualized", "no longer evident", "is no longer present",
    "are no longer present", "has been withdrawn", "have been withdrawn", "removal", "was removed",
    "were removed", "not visible", "is not visible", "are not visible", "is excluded", "are excluded",
    "ruled out", "is ruled out", "has been excluded", "no longer identified", "is no longer identified",
    "no longer appreciated", "is no longer appreciated", "is negative", "within normal limits", "is normal",
    "are normal", "is unremarkable", "are unremarkable", "appears normal", "appear normal",
)
# Uncertainty that wins over negation (CheXpert's "pre-negation uncertainty"): these phrases
# contain a negation word but assert that the finding is possible.
STRONG_UNCERTAINTY: tuple[str, ...] = (
    "cannot exclude", "can not exclude", "cannot be excluded", "can not be excluded", "could not be excluded",
    "cannot be entirely excluded", "not excluded", "not entirely excluded", "cannot rule out",
    "can not rule out", "cannot be ruled out", "can not be ruled out", "not ruled out", "not be ruled out",
    "not be excluded", "difficult to exclude", "difficult to rule out", "rule out", "to rule out",
    "r/o", "to exclude", "evaluate for", "assess for", "not clearly excluded", "cannot be completely excluded",
    "no definite evidence against", "can't exclude", "can't be excluded", "cannot be definitely excluded",
    "not completely excluded", "no evidence to rule out", "cannot be totally excluded", "not be completely excluded",
    "cannot be fully excluded", "not be entirely excluded", "could not be ruled out", "cannot entirely exclude",
    "cannot completely exclude", "not well excluded", "is not excluded", "are not excluded",
)
# Uncertainty before the mention.
PRE_UNCERTAINTY: tuple[str, ...] = (
    "possible", "possibly", "probable", "probably",
    "may", "may represent", "may reflect", "may be", "might", "might represent", "could", "could be",
    "could represent", "could reflect", "questionable", "question of", "suspected",
    "suspect", "concern for", "suggests", "suggest", "suggestion of", "suspicion of", "suspicion for",
    "differential diagnosis includes", "differential includes", "differential considerations include",
    "presumed", "presumably", "equivocal", "indeterminate", "uncertain", "unclear", "possibility of",
    "potential", "potentially", "borderline", "raising the possibility of", "cannot be distinguished from",
    "consider", "considered", "favor", "favored", "favoring", "maybe", "perhaps", "would be", "questionably",
    "correlate for", "clinical correlation for", "correlate clinically for", "presumptive",
    "cannot be differentiated from",
)
# Hedges that also work after the mention when they end the clause ("atelectasis, likely.").
CLAUSE_FINAL_UNCERTAINTY: tuple[str, ...] = ("probably", "possibly", "presumably", "suspected", "possible")
# Hedges that link two findings: uncertain on their own ("opacity concerning for pneumonia"),
# negated when the finding they hang on is negated ("no consolidation to suggest pneumonia").
LINKING_UNCERTAINTY: tuple[str, ...] = (
    "to suggest", "suggesting", "suggestive of", "to indicate", "concerning for", "worrisome for",
    "suspicious for", "to suggest the presence of", "worrisome for the presence of", "to explain",
    "indicative of", "raising concern for", "raising the question of",
)
# Uncertainty after the mention.
POST_UNCERTAINTY: tuple[str, ...] = (
    "is possible", "are possible", "is likely", "are likely", "is suspected", "are suspected",
    "is questionable", "are questionable", "is questioned", "are questioned", "questioned",
    "is not clearly seen", "may be present", "may be seen", "could be present", "might be present",
    "is a possibility", "is considered", "is favored", "are not well seen", "is not well seen",
    "not well seen", "not well visualized", "is not well visualized", "are not well visualized",
    "poorly evaluated", "is poorly evaluated", "incompletely evaluated", "not well evaluated",
    "is not well evaluated", "is obscured", "are obscured", "not clearly visualized", "is not clearly visualized",
    "are not clearly seen", "not clearly seen", "is less likely", "less likely", "not entirely clear",
    "cannot be assessed", "not assessed", "is difficult to assess", "may also be present",
)
# Uncertainty on both sides of the trigger ("atelectasis versus pneumonia").
BOTH_UNCERTAINTY: tuple[str, ...] = ("versus", "vs", "vs.", "and/or")

# Phrases that start like a negation but do not negate what follows ("no change in the effusion").
PSEUDO_NEGATION: tuple[str, ...] = (
    "no change", "no interval change", "no significant change", "no significant interval change",
    "no appreciable change", "no substantial change", "no increase", "no decrease", "no worsening",
    "no improvement", "no significant improvement", "without change", "without interval change",
    "without significant change", "not significantly changed", "not changed", "no further change",
    "not only", "gram negative", "no other", "not increased",
)

# Statements of presence: they end the scope of a negation ("no effusion, there is consolidation").
PRESENCE: tuple[str, ...] = (
    "there is", "there are", "there has been", "is seen", "are seen", "is present", "are present",
    "is noted", "are noted", "is again seen", "are again seen", "is identified", "are identified",
    "is demonstrated", "persists", "persist", "remains", "remain", "is visualized", "is evident",
    "has developed", "has increased", "however", "but", "although", "though",
    "aside from", "apart from", "except", "except for", "with the exception of", "otherwise", "whereas", "while",
    "though there is",
    # "likely X" is X (CheXpert: no uncertainty pattern for a plain "likely"); it also ends a
    # negation's scope ("no consolidation, likely atelectasis"). "X is likely" stays uncertain.
    "likely", "likely represents", "likely reflects", "likely representing", "most likely",
    "most likely representing", "likely due to",
)

# Phrases that make a report not "No Finding" although they are none of the 13 findings:
# chronic or incidental abnormalities (CheXpert's No Finding list, spelled out). Matched with the
# same negation rules ("no emphysema" does not exclude No Finding).
NO_FINDING_EXCLUSIONS: tuple[str, ...] = (
    "emphysema", "emphysematous", "hyperinflation", "hyperinflated", "hyperexpansion", "hyperexpanded",
    "copd", "chronic obstructive", "granuloma", "granulomas", "granulomatous", "calcification",
    "calcifications", "calcified", "calcified nodule", "calcified nodules", "calcified granuloma",
    "calcified granulomas", "calcified lymph nodes", "scoliosis", "kyphosis", "fibrosis", "fibrotic",
    "bronchiectasis", "hernia", "prominence", "prominent", "degenerative", "degenerative changes",
    "degeneration", "osteopenia", "osteophytes", "osteophytosis", "tortuous", "tortuosity",
    "elevated hemidiaphragm", "elevation", "eventration", "bulla", "bullae", "bullous", "cyst", "cysts",
    "interstitial lung disease", "interstitial abnormality", "reticular", "thickening", "aspiration",
    "pneumomediastinum", "pneumoperitoneum", "free air", "atherosclerosis", "atherosclerotic",
    "aortic knob calcification", "hilar enlargement", "lymphadenopathy", "adenopathy", "hematoma",
    "hemorrhage", "contusion", "deformity", "asthma", "bronchitis", "bronchiolitis", "bronchospasm",
    "airway disease", "airways disease", "peribronchial cuffing", "cuffing", "hypertension", "sternotomy",
    "sternotomy wires", "sternal wires", "sternal sutures",
    "surgical clips", "post-surgical", "postsurgical", "postoperative", "thoracotomy",
    "lobectomy", "pneumonectomy", "resection", "arthritis", "arthropathy", "density", "densities",
    "blunting", "blunted", "blunts", "blunting of the costophrenic angle", "blunting of the costophrenic angles",
    "volume loss", "cephalization", "vascular redistribution", "plaque", "plaques", "fissure", "fissures",
    "metastasis", "metastases", "metastatic disease", "metastatic", "inflammation", "inflammatory",
    "irregular lucency", "aortic disease", "osteodystrophy", "bullet", "bullets", "radiopaque", "aerophagia",
    "thoracentesis", "hyperlucent", "hyperlucency", "dextroscoliosis", "levoscoliosis", "ectatic", "ectasia",
)


def _check() -> None:
    """Fail at import if a label key is misspelt: a typo would silently drop a label."""
    unknown = (set(MENTIONS) | set(ANATOMY)) - set(CHEXPERT_LABELS)
    if unknown:
        raise ValueError(f"labeler lexicon: unknown CheXpert labels {sorted(unknown)}; see constants.CHEXPERT_LABELS")


_check()
