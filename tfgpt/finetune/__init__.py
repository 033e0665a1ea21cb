"""Fine-tuning a GPT run for a task: labelled data, a classifier head, and its training.

``tfgpt.finetune.labelled`` reads (label, text) files; ``classifier`` holds the Keras model;
``classify`` trains one from a run dir and applies it.
"""
