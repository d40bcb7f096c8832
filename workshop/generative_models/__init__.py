"""The import paths of the user guide (re-exports only).

`workshop.generative_models.factories`, `.core.configuration` and
`.core.device_manager` re-export the implementations in `workshop.models` and
`workshop.core`; importing them registers every built-in model family.
"""
