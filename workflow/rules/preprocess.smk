# rules of stage preprocess (being written)
