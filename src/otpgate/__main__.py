from otpgate.cli import main

raise SystemExit(main())
