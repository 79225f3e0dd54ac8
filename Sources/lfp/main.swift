import LFPCommands

LFPCommand.main()
