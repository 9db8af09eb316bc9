from ckptkit.cli import main

raise SystemExit(main())
