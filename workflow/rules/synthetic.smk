# rules of stage synthetic (being written)
