import LFP
