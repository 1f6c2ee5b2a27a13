//! Synthetic models: random weights of the released RWKV-7 shapes.
