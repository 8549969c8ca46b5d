# rules of stage infer (being written)
