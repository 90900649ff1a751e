"""What people send besides words: pictures and files, fetched, checked and made readable for the model."""
