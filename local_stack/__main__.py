from local_stack.stack import main

main()
