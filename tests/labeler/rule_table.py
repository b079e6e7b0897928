"""Real-style report sentences, written from the CheXpert labeling rules, with their 14 labels.

Each row is (rule, text, expected): `expected` lists the non-blank labels with short codes
(`EFF=1 PTX=0 NF=1`; values 1, 0 and u for uncertain); every label not listed must be blank.
The wording follows what radiologists write in MIMIC-CXR and IU X-ray reports (coordinated and
hedged negations, de-identification marks, numbered impressions), not our generated reports.
"""

from __future__ import annotations

CODES = {
    "ATL": "Atelectasis",
    "CMG": "Cardiomegaly",
    "CON": "Consolidation",
    "EDE": "Edema",
    "ECM": "Enlarged Cardiomediastinum",
    "FRA": "Fracture",
    "LES": "Lung Lesion",
    "OPA": "Lung Opacity",
    "NF": "No Finding",
    "EFF": "Pleural Effusion",
    "PLO": "Pleural Other",
    "PNA": "Pneumonia",
    "PTX": "Pneumothorax",
    "DEV": "Support Devices",
}
VALUES = {"1": 1.0, "0": 0.0, "u": -1.0}

# The rules the table covers (docs/labeler.md, "How a report is read"); every one has rows.
RULES = (
    "mention",  # a phrase of a category's mention list
    "unmention",  # look-alikes that are not the finding
    "anatomy",  # heart / mediastinum with a qualifier
    "neg-pre",  # negation cue before the mention
    "neg-post",  # negation cue after the mention
    "neg-list",  # one negation over a coordinated list, across "or" / "nor" / "and"
    "pseudo-neg",  # "no change in ...": not a negation
    "scope-end",  # a negation's scope ends at a clause or a presence statement
    "unc-pre",  # uncertainty cue before the mention
    "unc-post",  # uncertainty cue after the mention
    "unc-strong",  # uncertainty that beats negation ("cannot exclude")
    "unc-link",  # hedges that link two findings ("concerning for")
    "unc-or",  # two findings joined by "or" / "versus"
    "unc-mention",  # mentions CheXpert reads as uncertain (vascular congestion)
    "implies",  # heart failure implies uncertain cardiomegaly
    "deid",  # de-identification marks XXXX / ___
    "numbered",  # numbered impression items
    "sentences",  # sentence splitting on real punctuation
    "aggregate",  # per-report aggregation: positive > uncertain > negated
    "no-finding",  # No Finding as CheXpert defines it
)

TABLE: tuple[tuple[str, str, str], ...] = (
    # --- mention: every category's phrases, stated plainly
    ("mention", "Small right pleural effusion.", "EFF=1"),
    ("mention", "Bilateral pleural effusions.", "EFF=1"),
    ("mention", "Small amount of pleural fluid at the left base.", "EFF=1"),
    ("mention", "Moderate left effusion.", "EFF=1"),
    ("mention", "Large right hydropneumothorax.", "EFF=1 PTX=1"),
    ("mention", "Small left apical pneumothorax.", "PTX=1"),
    ("mention", "Bilateral pneumothoraces.", "PTX=1"),
    ("mention", "Right lower lobe consolidation.", "CON=1"),
    ("mention", "Dense consolidative opacity in the left lower lobe.", "CON=1 OPA=1"),
    ("mention", "Right middle lobe pneumonia.", "PNA=1"),
    ("mention", "Findings consistent with multifocal pneumonia.", "PNA=1"),
    ("mention", "Left lower lobe infiltrate compatible with infection.", "OPA=1 PNA=1"),
    ("mention", "Mild pulmonary edema.", "EDE=1"),
    ("mention", "Moderate interstitial edema.", "EDE=1"),
    ("mention", "Kerley B lines are present.", "EDE=1"),
    ("mention", "Bibasilar atelectasis.", "ATL=1"),
    ("mention", "Left lower lobe collapse.", "ATL=1"),
    ("mention", "Atelectatic changes at the right base.", "ATL=1"),
    ("mention", "Mild cardiomegaly.", "CMG=1"),
    ("mention", "Moderate cardiac enlargement.", "CMG=1"),
    ("mention", "Enlarged heart.", "CMG=1"),
    ("mention", "Widened mediastinum.", "ECM=1"),
    ("mention", "Enlarged cardiomediastinal silhouette.", "ECM=1"),
    ("mention", "Healed left rib fractures.", "FRA=1"),
    ("mention", "Acute fracture of the right clavicle.", "FRA=1"),
    ("mention", "A 1.5 cm nodule in the right upper lobe.", "LES=1"),
    ("mention", "Left hilar mass.", "LES=1"),
    ("mention", "Nodular opacity in the left mid lung.", "LES=1 OPA=1"),
    ("mention", "Known bronchogenic carcinoma of the left upper lobe.", "LES=1"),
    ("mention", "Cavitary lesion in the right apex.", "LES=1"),
    ("mention", "Patchy opacities in both lung bases.", "OPA=1"),
    ("mention", "Focal airspace disease in the lingula.", "OPA=1"),
    ("mention", "Streaky opacification of the left base.", "OPA=1"),
    ("mention", "Right pleural thickening.", "PLO=1"),
    ("mention", "Calcified pleural plaques.", "PLO=1"),
    ("mention", "Biapical pleural-parenchymal scarring.", "PLO=1"),
    ("mention", "Endotracheal tube terminates 4 cm above the carina.", "DEV=1 NF=1"),
    ("mention", "Right PICC line ends in the SVC.", "DEV=1 NF=1"),
    ("mention", "Left chest wall pacemaker with leads in the right ventricle.", "DEV=1 NF=1"),
    ("mention", "Nasogastric tube courses below the diaphragm.", "DEV=1 NF=1"),
    ("mention", "Right internal jugular central venous catheter tip in the mid SVC.", "DEV=1 NF=1"),
    ("mention", "Sternal wires and a prosthetic valve.", "DEV=1"),
    ("mention", "Left subclavian Port-A-Cath in place.", "DEV=1 NF=1"),
    # --- unmention
    ("unmention", "Small pericardial effusion.", "NF=1"),
    ("unmention", "The visceral pleural line is displaced.", "NF=1"),
    ("unmention", "Lytic lesion of the left humerus.", "NF=1"),
    ("unmention", "Calcified nodule in the right lower lobe.", ""),
    ("unmention", "Calcified granuloma in the left upper lobe.", ""),
    ("unmention", "Soft tissue edema of the chest wall.", "NF=1"),
    ("unmention", "Massive hiatal hernia.", ""),
    ("unmention", "Bilateral nipple shadows.", "NF=1"),
    ("unmention", "Overlying ECG leads; opacity projecting over the heart.", "OPA=1"),
    ("unmention", "Compression deformity of a thoracic vertebral body.", ""),
    # --- anatomy with a qualifier
    ("anatomy", "Heart size is normal.", "CMG=0 NF=1"),
    ("anatomy", "The heart is normal in size.", "CMG=0 NF=1"),
    ("anatomy", "Normal heart size.", "CMG=0 NF=1"),
    ("anatomy", "Heart size within normal limits.", "CMG=0 NF=1"),
    ("anatomy", "The heart is not enlarged.", "CMG=0 NF=1"),
    ("anatomy", "The heart size is enlarged.", "CMG=1"),
    ("anatomy", "The heart is moderately enlarged.", "CMG=1"),
    ("anatomy", "The cardiac silhouette is mildly enlarged.", "CMG=1"),
    ("anatomy", "Heart size is at the upper limits of normal.", "CMG=u"),
    ("anatomy", "Heart size is borderline.", "CMG=u"),
    ("anatomy", "The heart is top normal in size.", "CMG=u"),
    ("anatomy", "Cardiomediastinal silhouette is within normal limits.", "ECM=0 NF=1"),
    ("anatomy", "The mediastinum is widened.", "ECM=1"),
    ("anatomy", "Normal cardiomediastinal silhouette.", "ECM=0 NF=1"),
    ("anatomy", "The cardiac and mediastinal silhouettes are normal.", "CMG=0 ECM=0 NF=1"),
    ("anatomy", "Heart and mediastinum are unremarkable.", "CMG=0 ECM=0 NF=1"),
    ("anatomy", "The cardiomediastinal silhouette is stable.", "ECM=u"),
    ("anatomy", "Heart size and mediastinal contours are within normal limits.", "CMG=0 ECM=0 NF=1"),
    ("anatomy", "The cardiomediastinal silhouette is normal and stable.", "ECM=0 NF=1"),
    ("anatomy", "The heart may be mildly enlarged.", "CMG=u"),
    ("anatomy", "The heart is XXXX.", "NF=1"),
    # --- negation before the mention
    ("neg-pre", "No pneumothorax.", "PTX=0 NF=1"),
    ("neg-pre", "There is no pleural effusion.", "EFF=0 NF=1"),
    ("neg-pre", "There is no evidence of pneumonia.", "PNA=0 NF=1"),
    ("neg-pre", "The lungs are clear without consolidation.", "CON=0 NF=1"),
    ("neg-pre", "Lungs are free of consolidation.", "CON=0 NF=1"),
    ("neg-pre", "Negative for pneumothorax.", "PTX=0 NF=1"),
    ("neg-pre", "The lungs are clear of edema.", "EDE=0 NF=1"),
    ("neg-pre", "No typical findings of pulmonary edema.", "EDE=0 NF=1"),
    ("neg-pre", "No radiographic evidence of pneumonia.", "PNA=0 NF=1"),
    ("neg-pre", "Without overt pulmonary edema.", "EDE=0 NF=1"),
    ("neg-pre", "No definite focal consolidation.", "CON=0 NF=1"),
    ("neg-pre", "No visible pneumothorax.", "PTX=0 NF=1"),
    ("neg-pre", "No acute displaced rib fracture.", "FRA=0 NF=1"),
    ("neg-pre", "No suspicious pulmonary nodule.", "LES=0 NF=1"),
    ("neg-pre", "Resolution of the right lower lobe pneumonia.", "PNA=0 NF=1"),
    ("neg-pre", "Resolved right lower lobe pneumonia.", "PNA=0 NF=1"),
    ("neg-pre", "Interval removal of the endotracheal tube.", "DEV=0 NF=1"),
    ("neg-pre", "No new consolidation.", "CON=0 NF=1"),
    ("neg-pre", "Atelectasis rather than pneumonia.", "ATL=1 PNA=0"),
    ("neg-pre", "No findings to suggest pneumonia.", "PNA=0 NF=1"),
    ("neg-pre", "There is no obvious pneumothorax.", "PTX=0 NF=1"),
    # --- negation after the mention
    ("neg-post", "Pneumothorax is not seen.", "PTX=0 NF=1"),
    ("neg-post", "Previously seen left effusion has resolved.", "EFF=0 NF=1"),
    ("neg-post", "Effusion and pneumothorax are no longer seen.", "EFF=0 PTX=0 NF=1"),
    ("neg-post", "The nasogastric tube has been removed.", "DEV=0 NF=1"),
    ("neg-post", "Interval chest tube removal.", "DEV=0 NF=1"),
    ("neg-post", "Focal consolidation is not identified.", "CON=0 NF=1"),
    ("neg-post", "A pneumothorax is not appreciated.", "PTX=0 NF=1"),
    ("neg-post", "The left lower lobe opacity has cleared.", "OPA=0 NF=1"),
    ("neg-post", "Pleural effusions are absent.", "EFF=0 NF=1"),
    ("neg-post", "Pulmonary edema is not evident.", "EDE=0 NF=1"),
    ("neg-post", "Pneumothorax is no longer visualized.", "PTX=0 NF=1"),
    ("neg-post", "Pneumonia has resolved since the prior study.", "PNA=0 NF=1"),
    ("neg-post", "Left basilar atelectasis has resolved.", "ATL=0 NF=1"),
    ("neg-pre", "No atelectasis or pleural thickening.", "ATL=0 PLO=0 NF=1"),
    # --- one negation over a coordinated list
    ("neg-list", "No effusion or pneumothorax.", "EFF=0 PTX=0 NF=1"),
    (
        "neg-list",
        "No focal consolidation, pleural effusion, pneumothorax, or pulmonary edema.",
        "CON=0 EFF=0 PTX=0 EDE=0 NF=1",
    ),
    ("neg-list", "No pneumothorax, pleural effusion, or focal airspace consolidation.", "PTX=0 EFF=0 CON=0 NF=1"),
    ("neg-list", "There is no focal airspace disease, pleural effusion or pneumothorax.", "OPA=0 EFF=0 PTX=0 NF=1"),
    (
        "neg-list",
        "No pleural effusion, focal consolidation, or acute displaced rib fracture.",
        "EFF=0 CON=0 FRA=0 NF=1",
    ),
    ("neg-list", "Neither effusion nor pneumothorax is present.", "EFF=0 PTX=0 NF=1"),
    ("neg-list", "No pneumothorax nor pleural effusion.", "PTX=0 EFF=0 NF=1"),
    ("neg-list", "No evidence of pneumonia, edema, effusion or pneumothorax.", "PNA=0 EDE=0 EFF=0 PTX=0 NF=1"),
    (
        "neg-list",
        "Without focal consolidation, large pleural effusion, or visible pneumothorax.",
        "CON=0 EFF=0 PTX=0 NF=1",
    ),
    (
        "neg-list",
        "No focal consolidation, suspicious pulmonary opacity, large pleural effusion, or pneumothorax.",
        "CON=0 OPA=0 EFF=0 PTX=0 NF=1",
    ),
    ("neg-list", "No pleural effusion and no pneumothorax.", "EFF=0 PTX=0 NF=1"),
    ("neg-list", "No acute bony abnormality or rib fracture.", "FRA=0 NF=1"),
    ("neg-list", "No pulmonary nodules or masses.", "LES=0 NF=1"),
    ("neg-list", "No signs of pneumonia, pulmonary edema, or pleural effusion.", "PNA=0 EDE=0 EFF=0 NF=1"),
    # --- pseudo-negation
    ("pseudo-neg", "No change in the small left pleural effusion.", "EFF=1"),
    ("pseudo-neg", "No significant interval change in cardiomegaly.", "CMG=1"),
    ("pseudo-neg", "No increase in the right pneumothorax.", "PTX=1"),
    ("pseudo-neg", "No worsening of the pulmonary edema.", "EDE=1"),
    ("pseudo-neg", "Left lower lobe consolidation without interval change.", "CON=1"),
    ("pseudo-neg", "Right basilar atelectasis is not significantly changed.", "ATL=1"),
    # --- scope of a negation ends
    ("scope-end", "No pneumothorax, but there is a small left effusion.", "PTX=0 EFF=1"),
    ("scope-end", "No pneumothorax; moderate cardiomegaly.", "PTX=0 CMG=1"),
    ("scope-end", "No effusion and the heart is enlarged.", "EFF=0 CMG=1"),
    ("scope-end", "No effusion. Pneumothorax is present.", "EFF=0 PTX=1"),
    ("scope-end", "No pleural effusion, however there is right lower lobe consolidation.", "EFF=0 CON=1"),
    ("scope-end", "No focal consolidation aside from left basilar atelectasis.", "CON=0 ATL=1"),
    ("scope-end", "There is no pneumothorax and there is a small right effusion.", "PTX=0 EFF=1"),
    ("scope-end", "The lungs are clear except for mild bibasilar atelectasis.", "ATL=1"),
    ("scope-end", "No edema; the cardiac silhouette is enlarged.", "EDE=0 CMG=1"),
    # --- uncertainty before
    ("unc-pre", "Possible small left effusion.", "EFF=u"),
    ("unc-pre", "There may be a small right pneumothorax.", "PTX=u"),
    ("unc-pre", "Probable atelectasis at the left base.", "ATL=u"),
    ("mention", "Likely atelectasis at the left base.", "ATL=1"),
    ("unc-pre", "Probable right lower lobe pneumonia.", "PNA=u"),
    ("unc-pre", "Questionable tiny left apical pneumothorax.", "PTX=u"),
    ("unc-pre", "Opacity at the right base may represent atelectasis.", "OPA=1 ATL=u"),
    ("unc-pre", "Findings may reflect mild interstitial edema.", "EDE=u"),
    ("unc-pre", "Suspected right middle lobe pneumonia.", "PNA=u"),
    ("unc-pre", "Borderline cardiomegaly.", "CMG=u"),
    ("unc-pre", "Presumed left lower lobe collapse.", "ATL=u"),
    ("unc-pre", "Differential diagnosis includes pneumonia.", "PNA=u"),
    ("unc-pre", "Could be early pneumonia.", "PNA=u"),
    ("unc-pre", "Clinical correlation for pneumonia is recommended.", "PNA=u"),
    ("unc-pre", "Bibasilar opacities likely atelectasis.", "OPA=1 ATL=1"),
    ("scope-end", "No pneumothorax, likely right basilar atelectasis.", "PTX=0 ATL=1"),
    # --- uncertainty after
    ("unc-post", "A tiny right apical pneumothorax is questioned.", "PTX=u"),
    ("unc-post", "Left basilar atelectasis, probably.", "ATL=u"),
    ("unc-post", "Right basilar atelectasis is likely.", "ATL=u"),
    ("unc-post", "A small effusion may be present.", "EFF=u"),
    ("unc-post", "Superimposed infection is possible.", "PNA=u"),
    ("unc-post", "Small left pleural effusion is not well seen on the frontal view.", "EFF=u"),
    ("unc-post", "The left costophrenic angle is excluded; effusion is poorly evaluated.", "EFF=u"),
    ("unc-post", "Pneumonia is considered less likely.", "PNA=u"),
    ("unc-post", "Pleural effusion is suspected.", "EFF=u"),
    # --- uncertainty that beats negation
    ("unc-strong", "Cannot exclude pneumonia.", "PNA=u"),
    ("unc-strong", "Pneumonia cannot be excluded.", "PNA=u"),
    ("unc-strong", "Early pneumonia is not excluded.", "PNA=u"),
    ("unc-strong", "A small effusion cannot be ruled out.", "EFF=u"),
    ("unc-strong", "Underlying consolidation cannot be entirely excluded.", "CON=u"),
    ("unc-strong", "No definite pneumothorax; a tiny apical pneumothorax cannot be excluded.", "PTX=u"),
    ("unc-strong", "Difficult to exclude a small left pleural effusion.", "EFF=u"),
    ("unc-strong", "Rule out pneumonia.", "PNA=u"),
    # --- linking hedges
    ("unc-link", "Opacity concerning for pneumonia.", "OPA=1 PNA=u"),
    ("unc-link", "Right lower lobe opacity, suspicious for pneumonia.", "OPA=1 PNA=u"),
    ("unc-link", "Findings suggestive of mild interstitial edema.", "EDE=u"),
    ("unc-link", "There is no focal airspace consolidation to suggest pneumonia.", "CON=0 NF=1 PNA=0"),
    ("unc-link", "Left basilar opacity worrisome for aspiration.", "OPA=1"),
    ("unc-link", "Increased density at the right base suggesting infection.", "OPA=1 PNA=u"),
    ("unc-link", "No consolidation to indicate pneumonia.", "CON=0 PNA=0 NF=1"),
    # --- "or" and "versus"
    ("unc-or", "Atelectasis versus pneumonia.", "ATL=u PNA=u"),
    ("unc-or", "Atelectasis vs. consolidation at the right base.", "ATL=u CON=u"),
    ("unc-or", "Left lower lobe atelectasis or pneumonia.", "ATL=u PNA=u"),
    ("unc-or", "Patchy left basilar opacity, atelectasis or scarring.", "OPA=1 ATL=u"),
    ("unc-or", "Effusion and/or atelectasis at the left base.", "EFF=u ATL=u"),
    ("unc-or", "Pneumonia or aspiration in the right lower lobe.", "PNA=u"),
    # --- uncertain mentions
    ("unc-mention", "Pulmonary vascular congestion.", "EDE=u"),
    ("unc-mention", "Mild pulmonary vascular congestion without frank edema.", "EDE=u"),
    ("unc-mention", "Vascular indistinctness at the hila.", "EDE=u"),
    ("unc-mention", "No pulmonary vascular congestion.", "EDE=0 NF=1"),
    ("unc-mention", "Mild vascular prominence.", "EDE=u"),
    # --- implied labels
    ("implies", "Findings consistent with CHF.", "EDE=1 CMG=u"),
    ("implies", "Mild congestive heart failure.", "EDE=1 CMG=u"),
    ("implies", "No evidence of congestive heart failure.", "EDE=0 NF=1"),
    ("implies", "Possible mild heart failure.", "EDE=u CMG=u"),
    # --- de-identification marks
    ("deid", "No XXXX of pneumothorax.", "PTX=0 NF=1"),
    ("deid", "There are no XXXX XXXX or effusions.", "EFF=0 NF=1"),
    ("deid", "Heart size normal. No XXXX XXXX XXXX of pneumonia.", "CMG=0 PNA=0 NF=1"),
    ("deid", "XXXX opacities in the right lower lobe.", "OPA=1"),
    ("deid", "Compared to ___, the left effusion has resolved.", "EFF=0 NF=1"),
    ("deid", "Stable XXXX sternotomy. No focal consolidation.", "CON=0"),
    ("deid", "Dr. ___ was notified of the pneumothorax at ___ p.m.", "PTX=1"),
    ("deid", "XXXX left-sided pleural effusion.", "EFF=1"),
    # --- numbered impression items
    ("numbered", "1. Cardiomegaly. 2. No pneumothorax.", "CMG=1 PTX=0"),
    ("numbered", "1.  No acute cardiopulmonary process.\n2.  Endotracheal tube in standard position.", "DEV=1 NF=1"),
    ("numbered", "1. No pleural effusion\n2. Left lower lobe atelectasis", "EFF=0 ATL=1"),
    ("numbered", "1) No pneumothorax 2) Small left effusion", "PTX=0 EFF=1"),
    ("numbered", "IMPRESSION:\n1. No focal consolidation.\n2. Possible small right effusion.", "CON=0 EFF=u"),
    ("numbered", "- No pneumothorax\n- Mild cardiomegaly", "PTX=0 CMG=1"),
    # --- sentence splitting
    ("sentences", "No pneumothorax.Small left effusion is unchanged.", "PTX=0 EFF=1"),
    ("sentences", "A 1.5 cm nodule. No effusion.", "LES=1 EFF=0"),
    ("sentences", "Atelectasis vs. pneumonia, e.g. in the base.", "ATL=u PNA=u"),
    ("sentences", "No effusion!\n\nLarge pneumothorax", "EFF=0 PTX=1"),
    ("sentences", "IMPRESSION:\n  SMALL LEFT PLEURAL\n EFFUSION.  NO\nPNEUMOTHORAX.", "EFF=1 PTX=0"),
    ("sentences", "Is there pneumonia? No.", "PNA=1"),
    # --- aggregation over a report
    ("aggregate", "There is a small left pleural effusion. No right pleural effusion.", "EFF=1"),
    ("aggregate", "No pneumonia on the right. Possible pneumonia in the left lower lobe.", "PNA=u"),
    ("aggregate", "Possible pneumonia in the left lower lobe. Right lower lobe pneumonia.", "PNA=1"),
    ("aggregate", "No effusion on the left. Cannot exclude a small right effusion.", "EFF=u"),
    ("aggregate", "No pneumothorax. No pneumothorax on the lateral view.", "PTX=0 NF=1"),
    # --- No Finding
    ("no-finding", "No acute cardiopulmonary process.", "NF=1"),
    ("no-finding", "Lungs are clear. No effusion or pneumothorax. Heart size is normal.", "EFF=0 PTX=0 CMG=0 NF=1"),
    ("no-finding", "Endotracheal tube in standard position. Lungs are clear.", "DEV=1 NF=1"),
    ("no-finding", "Hyperinflation. No evidence of acute disease.", ""),
    ("no-finding", "Mild scoliosis. Lungs are clear.", ""),
    ("no-finding", "No emphysema. Lungs are clear.", "NF=1"),
    ("no-finding", "Degenerative changes of the thoracic spine.", ""),
    ("no-finding", "Elevation of the right hemidiaphragm.", ""),
    ("no-finding", "Blunting of the right costophrenic angle.", ""),
    ("no-finding", "Mild thickening of the minor fissure.", ""),
    ("no-finding", "Negative chest.", "NF=1"),
    ("no-finding", "Normal chest x-XXXX.", "NF=1"),
    ("no-finding", "Volume loss in the left hemithorax.", ""),
)


def expected_labels(spec: str) -> dict[str, float | None]:
    """`"EFF=1 PTX=0"` -> the 14 labels (all others None)."""
    labels: dict[str, float | None] = dict.fromkeys(CODES.values())
    for item in spec.split():
        code, value = item.split("=")
        labels[CODES[code]] = VALUES[value]
    return labels
