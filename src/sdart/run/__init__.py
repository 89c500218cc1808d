"""The denoising run behind `Engine.generate`: progress and cancellation, one batch's passes through the pipeline,
post-processing, the infotext of what was applied, and the result objects."""
