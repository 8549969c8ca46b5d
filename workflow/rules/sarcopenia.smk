# rules of stage sarcopenia (being written)
