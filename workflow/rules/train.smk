# rules of stage train (being written)
