from perceptlib.cli import main

raise SystemExit(main())
