# rules of stage evaluate (being written)
