"""Keras model files, read and written safely: the `.keras` zip, legacy `.h5`, staging.

Below every other part of kerastl: a backbone file, a weights source and a
saved model all open through here, with the same checks (corruption, code in
the file, sizes) and the same errors.
"""
