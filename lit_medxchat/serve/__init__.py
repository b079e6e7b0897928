"""`lit-medxchat serve`: a web chat (gradio) for a trained MedXChat run.

Upload CXRs, get a report, ask questions, ask for a CXR and see it drawn, on the same
`MedXChatPipeline` as `lit-medxchat chat`. gradio is an optional extra (`pip install
lit-medxchat[serve]`); only `app.py` and `cli.py` import it, so the rest (upload decoding, run
headers, the chat engine) works and is tested without it.
"""
