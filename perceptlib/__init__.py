"""perceptlib: perceptual losses (Johnson, Alahi & Fei-Fei, ECCV 2016), reproduced."""
