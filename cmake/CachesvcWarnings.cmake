# Warnings for the project's own code: on, and errors. Generated code (protobuf/gRPC stubs) and
# third-party headers (included as SYSTEM) are not held to them.
function(cachesvc_warnings target)
  target_compile_options(${target} PRIVATE
    $<$<COMPILE_LANGUAGE:CXX>:-Wall -Wextra -Wpedantic -Wshadow -Wnon-virtual-dtor
                              -Wold-style-cast -Wcast-align -Wunused -Woverloaded-virtual
                              -Wnull-dereference -Wimplicit-fallthrough -Werror>
    # Clang checks the lock annotations (ABSL_GUARDED_BY, ABSL_EXCLUSIVE_LOCKS_REQUIRED, ...);
    # GCC ignores them, so the Clang presets (clang, asan, tsan) are where locking is verified.
    $<$<AND:$<COMPILE_LANGUAGE:CXX>,$<CXX_COMPILER_ID:Clang>>:-Wthread-safety>
    $<$<COMPILE_LANGUAGE:CUDA>:-Werror=all-warnings -Xcompiler=-Wall,-Wextra,-Werror>)
endfunction()
