// Compiles tests/support/pch.h once for every test target (REUSE_FROM cachesvc_test_pch).
