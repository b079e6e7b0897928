"""Our own phrasings for the rule-built dialogues: instructions, questions, answers, explanations.

Variety matters more than number: each list is sampled with the builder's seeded generator,
so the same (seed, key) always picks the same wording. `{name}` is a finding's display name,
`{np}` the same with its article and attributes ("a small right pleural effusion"), `{a_name}`
the name with its article, `{view}` / `{a_view}` a view phrase without / with its article.
"""

from __future__ import annotations

REPORT_INSTRUCTIONS: tuple[str, ...] = (
    "Generate a report of this chest x-ray.",
    "Write the radiology report for this chest X-ray.",
    "Please describe the findings in this chest radiograph.",
    "Can you write a report for this CXR?",
    "What does this chest X-ray show? Write it as a radiology report.",
    "Provide a findings and impression report for this image.",
    "Act as a radiologist and report this chest X-ray.",
    "Describe this chest radiograph in the style of a radiology report.",
    "I need the report for this chest film, please.",
    "Summarize this chest X-ray as a report with findings and impression.",
    "Could you interpret this chest X-ray and write up the report?",
    "Write a concise radiology report for the attached chest X-ray.",
)

# Display names per CheXpert label: (name without article, article).
FINDING_NAMES: dict[str, tuple[str, str]] = {
    "Atelectasis": ("atelectasis", ""),
    "Cardiomegaly": ("cardiomegaly", ""),
    "Consolidation": ("consolidation", ""),
    "Edema": ("pulmonary edema", ""),
    "Enlarged Cardiomediastinum": ("enlarged cardiomediastinum", "an"),
    "Fracture": ("fracture", "a"),
    "Lung Lesion": ("lung lesion", "a"),
    "Lung Opacity": ("lung opacity", "a"),
    "Pleural Effusion": ("pleural effusion", "a"),
    "Pleural Other": ("pleural abnormality", "a"),
    "Pneumonia": ("pneumonia", ""),
    "Pneumothorax": ("pneumothorax", "a"),
    "Support Devices": ("support device", "a"),
}

PRESENCE_QUESTIONS: tuple[str, ...] = (
    "Is there {a_name}?",
    "Is there {a_name} in this chest X-ray?",
    "Do you see any {name}?",
    "Does this image show {a_name}?",
    "Can you tell whether there is {a_name}?",
    "Is {a_name} present?",
    "Any signs of {name} on this radiograph?",
)
# "Consolidation-or-Pneumonia" asked as one diagnosis, as in the paper's tables.
CONSOLIDATION_OR_PNEUMONIA_QUESTIONS: tuple[str, ...] = (
    "Is there consolidation or pneumonia?",
    "Does this chest X-ray show pneumonia or consolidation?",
    "Are there signs of consolidation or pneumonia?",
    "Is there any consolidation suggesting pneumonia?",
)
NORMAL_QUESTIONS: tuple[str, ...] = (
    "Is this chest X-ray normal?",
    "Is this a normal chest radiograph?",
    "Would you call this chest X-ray normal?",
    "Is this study free of findings?",
)
YES_ANSWERS: tuple[str, ...] = (
    "Yes, {np} is present.",
    "Yes, there is {np}.",
    "Yes. The image shows {np}.",
    "Yes, I can see {np}.",
)
NO_ANSWERS: tuple[str, ...] = (
    "No, {a_name} is not present.",
    "No, there is no {name}.",
    "No. I do not see any {name}.",
    "No, there are no signs of {name}.",
)
NORMAL_YES_ANSWERS: tuple[str, ...] = (
    "Yes, this chest X-ray shows no acute abnormality.",
    "Yes, the study is normal.",
    "Yes. There are no findings of note.",
)
NORMAL_NO_ANSWERS: tuple[str, ...] = (
    "No, it is not normal: it shows {findings}.",
    "No. The image shows {findings}.",
    "No, there are abnormal findings: {findings}.",
)

LOCATION_QUESTIONS: tuple[str, ...] = (
    "Where is the {name} located?",
    "Where do you see the {name}?",
    "Which part of the chest does the {name} involve?",
    "What is the location of the {name}?",
)
LOCATION_ANSWERS: tuple[str, ...] = (
    "The {name} is {where}.",
    "It is {where}.",
    "The {name} is seen {where}.",
)
SIZE_QUESTIONS: tuple[str, ...] = (
    "How large is the {name}?",
    "What is the size of the {name}?",
    "How big is the {name}?",
)
SEVERITY_QUESTIONS: tuple[str, ...] = (
    "How severe is the {name}?",
    "What is the severity of the {name}?",
    "How bad is the {name}?",
)
TYPE_QUESTIONS: tuple[str, ...] = (
    "What type of {name} is it?",
    "Can you characterize the {name}?",
)
SIZE_ANSWERS: tuple[str, ...] = ("The {name} is {answer}.", "It is {answer_np}.")
MEASURE_ANSWERS: tuple[str, ...] = ("The {name} measures {answer}.", "It measures about {answer}.")
SEVERITY_ANSWERS: tuple[str, ...] = ("The {name} is {answer}.", "It is {answer}.")
TYPE_ANSWERS: tuple[str, ...] = ("It is {answer_np}.", "The finding is {answer_np}.")

VIEW_PHRASES: dict[str, tuple[str, ...]] = {
    "PA": ("PA view", "posteroanterior (PA) view", "frontal PA view", "PA (front) view"),
    "AP": ("AP view", "anteroposterior (AP) view", "frontal AP view", "portable AP view"),
    "LATERAL": ("lateral view", "side (lateral) view", "lateral projection"),
}
T2I_REQUESTS: tuple[str, ...] = (
    'Hi there, I recently had a chest X-ray and the report mentioned "{quote}". I\'m not sure what that means. '
    "Could you generate {a_view} of a chest X-ray with that condition for me?",
    "Can you show me what {np} looks like on a chest X-ray, {view} please?",
    "Please generate a chest radiograph in the {view} showing {np}.",
    "I'd like to see {a_view} chest X-ray with {np}. Can you create one?",
    'My report says "{quote}". What would that look like on {a_view} chest X-ray? Please draw one.',
    "Could you produce {a_view} chest X-ray of a patient with {np}?",
)
T2I_NORMAL_REQUESTS: tuple[str, ...] = (
    "Can you generate a normal chest X-ray in the {view}?",
    "What does a healthy chest X-ray look like? Please show me {a_view}.",
    "Please create {a_view} chest radiograph with no abnormal findings.",
    'My report says "{quote}". Could you show me {a_view} chest X-ray like that?',
)
T2I_OPENINGS: tuple[str, ...] = ("Absolutely.", "Sure.", "Of course.", "Certainly.")
T2I_CLOSINGS: tuple[str, ...] = (
    "Here is an image based on the description you provided:",
    "Here is a chest X-ray matching that description:",
    "This is how it could look:",
    "Here is the generated image:",
)
# One plain-language sentence per finding, for the assistant's explanation.
EXPLANATIONS: dict[str, str] = {
    "Atelectasis": "Atelectasis means part of the lung has collapsed or is not fully inflated, which shows up as "
    "a denser, whiter area with some loss of volume.",
    "Cardiomegaly": "Cardiomegaly means the heart looks enlarged: its shadow takes up more than about half of the "
    "width of the chest.",
    "Consolidation": "Consolidation means the air spaces of part of the lung are filled with fluid or pus, often from "
    "an infection such as pneumonia, so that region looks white.",
    "Edema": "Pulmonary edema is fluid in the lungs, often from the heart not pumping well; it makes the lungs look "
    "hazy, especially around the hila.",
    "Enlarged Cardiomediastinum": "An enlarged cardiomediastinum means the central shadow of the heart and the "
    "mediastinum is wider than expected.",
    "Fracture": "A fracture is a break in a bone; on a chest X-ray this is usually a rib.",
    "Lung Lesion": "A lung lesion is a rounded spot in the lung, called a nodule when small and a mass when larger; "
    "it needs follow-up to find its cause.",
    "Lung Opacity": "A lung opacity is an area of the lung that looks whiter than normal, which can have many causes.",
    "Pleural Effusion": "A pleural effusion is a build-up of fluid between the lung and the chest wall, which makes "
    "the lower chest look white and blunts the sharp angle at the lung base.",
    "Pleural Other": "This is a change of the pleura, the lining around the lung, such as thickening or a plaque.",
    "Pneumonia": "Pneumonia is a lung infection; the infected part of the lung fills with fluid and looks white.",
    "Pneumothorax": "A pneumothorax is air between the lung and the chest wall, which lets the lung partly collapse; "
    "it shows as a dark area without lung markings.",
    "Support Devices": "Support devices are tubes, lines or pacemakers placed for treatment or monitoring; they are "
    "dense and show up bright white.",
}
NORMAL_EXPLANATION = (
    "A normal chest X-ray shows clear lungs, a heart of normal size and no fluid or air around the lungs."
)
