"""Reference scikit-learn trainer honouring the training-job contract."""
