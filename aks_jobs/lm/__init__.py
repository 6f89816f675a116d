"""Language-model code shared by the train, evaluate and score steps."""
