from crossnn.cli import main

raise SystemExit(main())
