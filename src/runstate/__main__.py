from runstate.cli import main

main()
