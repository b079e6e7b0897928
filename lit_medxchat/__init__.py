"""lit-medxchat: MedXChat (CXR-to-report, CXR VQA, text-to-CXR) as Lightning modules.

Importing the package is cheap: heavy libraries (torch, transformers, diffusers) are imported
by the modules that need them, never here.
"""

__version__ = "0.1.0"
